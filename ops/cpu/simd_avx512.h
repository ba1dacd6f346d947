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
  static vec load_i8(const int8_t* p) {  // `width` signed bytes, widened to float
    return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))));
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
