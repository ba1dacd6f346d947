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
  // `width` halves / bf16 values, rounded to nearest even bit for bit as runtime/dtype.h's
  // f32_to_f16 / f32_to_bf16 (vcvtps2ph rounds finite values and overflow alike; NaN lanes take
  // the scalar code's quiet NaN, sign | 0x7e00, instead of the hardware's payload-keeping one).
  static void store_f16(uint16_t* p, vec v) {
    const __m256i u = _mm256_castps_si256(v);
    const __m256i nan32 = _mm256_castps_si256(_mm256_cmp_ps(v, v, _CMP_UNORD_Q));
    const __m256i qnan32 =
        _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(0x8000)), _mm256_set1_epi32(0x7e00));
    const __m128i nan = _mm_packs_epi32(_mm256_castsi256_si128(nan32), _mm256_extracti128_si256(nan32, 1));
    const __m128i qnan = _mm_packus_epi32(_mm256_castsi256_si128(qnan32), _mm256_extracti128_si256(qnan32, 1));
    const __m128i h = _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(p), _mm_blendv_epi8(h, qnan, nan));
  }
  static void store_bf16(uint16_t* p, vec v) {  // u + 0x7fff + lsb, top half; NaN: (u >> 16) | 0x40
    const __m256i u = _mm256_castps_si256(v);
    const __m256i a = _mm256_and_si256(u, _mm256_set1_epi32(0x7fffffff));
    const __m256i nan = _mm256_cmpgt_epi32(a, _mm256_set1_epi32(0x7f800000));  // both below 2^31: signed is fine
    const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1));
    const __m256i r = _mm256_srli_epi32(_mm256_add_epi32(_mm256_add_epi32(u, _mm256_set1_epi32(0x7fff)), lsb), 16);
    const __m256i q = _mm256_or_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(0x40));
    const __m256i b = _mm256_blendv_epi8(r, q, nan);  // every lane below 2^16: packus keeps it
    _mm_storeu_si128(reinterpret_cast<__m128i*>(p), _mm_packus_epi32(_mm256_castsi256_si128(b), _mm256_extracti128_si256(b, 1)));
  }
  static vec load_i8(const int8_t* p) {  // `width` signed bytes, widened to float
    return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))));
  }
  // |v| (the sign bit cleared) and the largest lane (exact in any order; no lane may be NaN).
  static vec abs(vec v) { return _mm256_andnot_ps(_mm256_set1_ps(-0.0f), v); }
  static float hmax(vec v) {
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_shuffle_ps(m, m, 1));
    return _mm_cvtss_f32(m);
  }
  // `width` values rounded to nearest even (the MXCSR default), clamped to +-127 as integers
  // (a NaN lane converts to INT_MIN and so stores -127, as the scalar code does on x86), stored
  // as signed bytes.
  static void store_i8_clamped(int8_t* p, vec v) {
    const __m256i i = _mm256_max_epi32(_mm256_min_epi32(_mm256_cvtps_epi32(v), _mm256_set1_epi32(127)), _mm256_set1_epi32(-127));
    const __m128i w = _mm_packs_epi32(_mm256_castsi256_si128(i), _mm256_extracti128_si256(i, 1));  // in range: exact
    _mm_storel_epi64(reinterpret_cast<__m128i*>(p), _mm_packs_epi16(w, w));
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
