// AVX-512 version of float_dot (compiled with AVX-512 flags; called only when the CPU has them).
#include <immintrin.h>

#include "ops/cpu/float_dot_simd.h"

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
};

}  // namespace

void float_dot_avx512(DType wtype, const void* row, const float* x, int64_t ldx, int64_t T, int64_t n, float* out) {
  float_dot_simd<Avx512>(wtype, row, x, ldx, T, n, out);
}

}  // namespace jetmoe
