// AVX2 + FMA + F16C vector traits for the kernel templates of ops/cpu/*_simd.h. Include only from files
// compiled with the AVX2 flags (*_avx2.cpp): internal linkage, so no SIMD code leaks into
// portable code.
#pragma once

#include <immintrin.h>

#include <cstdint>

namespace jetmoe {
namespace {

struct Avx2 {
  using vec = __m256;
  static constexpr int64_t width = 8;
  static vec zero() { return _mm256_setzero_ps(); }
  static vec load(const float* p) { return _mm256_loadu_ps(p); }
  static vec load_bf16(const uint16_t* p) {  // bf16 is the top half of an fp32
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))), 16));
  }
  static vec load_f16(const uint16_t* p) { return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))); }
  static vec fma(vec a, vec b, vec c) { return _mm256_fmadd_ps(a, b, c); }
  static vec add(vec a, vec b) { return _mm256_add_ps(a, b); }
  static float hsum(vec v) {
    __m128 lo = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    lo = _mm_hadd_ps(lo, lo);
    lo = _mm_hadd_ps(lo, lo);
    return _mm_cvtss_f32(lo);
  }
  static vec mul(vec a, vec b) { return _mm256_mul_ps(a, b); }
  static float h2f(uint16_t h) { return _cvtsh_ss(h); }  // one fp16 scalar, exactly
  static vec set1(float f) { return _mm256_set1_ps(f); }
  static void store(float* p, vec v) { _mm256_storeu_ps(p, v); }
  static vec load_i8(const int8_t* p) {  // `width` signed bytes, widened to float
    return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))));
  }
  // For exp (ops/cpu/vec_math_simd.h).
  using mask = __m256;
  static vec sub(vec a, vec b) { return _mm256_sub_ps(a, b); }
  static vec div(vec a, vec b) { return _mm256_div_ps(a, b); }
  static vec min(vec a, vec b) { return _mm256_min_ps(a, b); }
  static vec max(vec a, vec b) { return _mm256_max_ps(a, b); }
  static vec round(vec a) { return _mm256_round_ps(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
  static mask greater(vec a, vec b) { return _mm256_cmp_ps(a, b, _CMP_GT_OQ); }
  static vec blend(vec a, vec b, mask m) { return _mm256_blendv_ps(a, b, m); }  // b where m
  static vec scale_pow2(vec p, vec n) {  // p * 2^n, n integral with -126 <= n <= 127 (2^n a normal float)
    const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
  }
};

}  // namespace
}  // namespace jetmoe
