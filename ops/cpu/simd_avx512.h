// AVX-512 (F, BW, VL, DQ) vector traits for the kernel templates of ops/cpu/*_simd.h. Include only from files
// compiled with the AVX512 flags (*_avx512.cpp): internal linkage, so no SIMD code leaks into
// portable code.
#pragma once

#include <immintrin.h>

#include <cstdint>

namespace jetmoe {
namespace {

struct Avx512 {
  using vec = __m512;
  static constexpr int64_t width = 16;
  static vec zero() { return _mm512_setzero_ps(); }
  static vec load(const float* p) { return _mm512_loadu_ps(p); }
  static vec load_bf16(const uint16_t* p) {  // bf16 is the top half of an fp32
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))), 16));
  }
  static vec load_f16(const uint16_t* p) { return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))); }
  static vec fma(vec a, vec b, vec c) { return _mm512_fmadd_ps(a, b, c); }
  static vec add(vec a, vec b) { return _mm512_add_ps(a, b); }
  static float hsum(vec v) { return _mm512_reduce_add_ps(v); }
  static vec mul(vec a, vec b) { return _mm512_mul_ps(a, b); }
  static float h2f(uint16_t h) { return _cvtsh_ss(h); }  // one fp16 scalar, exactly
  static vec set1(float f) { return _mm512_set1_ps(f); }
  static void store(float* p, vec v) { _mm512_storeu_ps(p, v); }
  // `width` halves / bf16 values, rounded to nearest even bit for bit as runtime/dtype.h's
  // f32_to_f16 / f32_to_bf16 (vcvtps2ph rounds finite values and overflow alike; NaN lanes take
  // the scalar code's quiet NaN, sign | 0x7e00, instead of the hardware's payload-keeping one).
  static void store_f16(uint16_t* p, vec v) {
    const __m512i u = _mm512_castps_si512(v);
    const __mmask16 nan = _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
    const __m256i qnan = _mm512_cvtepi32_epi16(
        _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(0x8000)), _mm512_set1_epi32(0x7e00)));
    const __m256i h = _mm512_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), _mm256_mask_blend_epi16(nan, h, qnan));
  }
  static void store_bf16(uint16_t* p, vec v) {  // u + 0x7fff + lsb, top half; NaN: (u >> 16) | 0x40
    const __m512i u = _mm512_castps_si512(v);
    const __mmask16 nan =
        _mm512_cmpgt_epu32_mask(_mm512_and_si512(u, _mm512_set1_epi32(0x7fffffff)), _mm512_set1_epi32(0x7f800000));
    const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
    const __m512i r = _mm512_srli_epi32(_mm512_add_epi32(_mm512_add_epi32(u, _mm512_set1_epi32(0x7fff)), lsb), 16);
    const __m512i q = _mm512_or_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(0x40));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), _mm512_cvtepi32_epi16(_mm512_mask_blend_epi32(nan, r, q)));
  }
  static vec load_i8(const int8_t* p) {  // `width` signed bytes, widened to float
    return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))));
  }
  // |v| (the sign bit cleared) and the largest lane (exact in any order; no lane may be NaN).
  static vec abs(vec v) { return _mm512_andnot_ps(_mm512_set1_ps(-0.0f), v); }
  static float hmax(vec v) { return _mm512_reduce_max_ps(v); }
  // `width` values rounded to nearest even (the MXCSR default), clamped to +-127 as integers
  // (a NaN lane converts to INT_MIN and so stores -127, as the scalar code does on x86), stored
  // as signed bytes.
  static void store_i8_clamped(int8_t* p, vec v) {
    const __m512i i = _mm512_max_epi32(_mm512_min_epi32(_mm512_cvtps_epi32(v), _mm512_set1_epi32(127)), _mm512_set1_epi32(-127));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(p), _mm512_cvtepi32_epi8(i));
  }
  // For exp (ops/cpu/vec_math_simd.h).
  using mask = __mmask16;
  static vec sub(vec a, vec b) { return _mm512_sub_ps(a, b); }
  static vec div(vec a, vec b) { return _mm512_div_ps(a, b); }
  static vec min(vec a, vec b) { return _mm512_min_ps(a, b); }
  static vec max(vec a, vec b) { return _mm512_max_ps(a, b); }
  static vec round(vec a) { return _mm512_roundscale_ps(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
  static mask greater(vec a, vec b) { return _mm512_cmp_ps_mask(a, b, _CMP_GT_OQ); }
  static vec blend(vec a, vec b, mask m) { return _mm512_mask_blend_ps(m, a, b); }  // b where m
  static vec scale_pow2(vec p, vec n) {  // p * 2^n, n integral with -126 <= n <= 127 (2^n a normal float)
    const __m512i e = _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127)), 23);
    return _mm512_mul_ps(p, _mm512_castsi512_ps(e));
  }
};

}  // namespace
}  // namespace jetmoe
