// avx512 version of float_dot (compiled with avx512 flags; called only when the CPU has avx512).
#include <immintrin.h>

#include "ops/cpu/float_dot.h"

namespace jetmoe {
namespace {

inline float hsum(__m512 v) { return _mm512_reduce_add_ps(v); }

template <DType WT>
inline __m512 load_w(const void* base, int64_t i) {
  if constexpr (WT == DType::F32) {
    return _mm512_loadu_ps(static_cast<const float*>(base) + i);
  } else if constexpr (WT == DType::BF16) {
    const uint16_t* p = static_cast<const uint16_t*>(base) + i;
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))), 16));
  } else {
    const uint16_t* p = static_cast<const uint16_t*>(base) + i;
    return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  }
}

// Up to 4 tokens share each loaded weight vector: the weight row is read from memory once.
template <DType WT, int NT>
void dot_tokens(const void* row, const float* x, int64_t ldx, int64_t n, float* out) {
  constexpr int64_t W = 16;
  __m512 acc[NT][2];
  for (int t = 0; t < NT; ++t) acc[t][0] = acc[t][1] = _mm512_setzero_ps();
  int64_t i = 0;
  for (; i + 2 * W <= n; i += 2 * W) {
    const __m512 w0 = load_w<WT>(row, i), w1 = load_w<WT>(row, i + W);
    for (int t = 0; t < NT; ++t) {
      acc[t][0] = _mm512_fmadd_ps(w0, _mm512_loadu_ps(x + t * ldx + i), acc[t][0]);
      acc[t][1] = _mm512_fmadd_ps(w1, _mm512_loadu_ps(x + t * ldx + i + W), acc[t][1]);
    }
  }
  for (; i + W <= n; i += W) {
    const __m512 w0 = load_w<WT>(row, i);
    for (int t = 0; t < NT; ++t) acc[t][0] = _mm512_fmadd_ps(w0, _mm512_loadu_ps(x + t * ldx + i), acc[t][0]);
  }
  float tail[NT] = {};
  if (i < n) {
    float wt[2 * W];
    float_row_to_f32(WT, static_cast<const uint8_t*>(row) + i * dtype_block_bytes(WT), n - i, wt);
    for (int t = 0; t < NT; ++t)
      for (int64_t k = i; k < n; ++k) tail[t] += wt[k - i] * x[t * ldx + k];
  }
  for (int t = 0; t < NT; ++t) out[t] = hsum(_mm512_add_ps(acc[t][0], acc[t][1])) + tail[t];
}

template <DType WT>
void dot_all(const void* row, const float* x, int64_t ldx, int64_t T, int64_t n, float* out) {
  int64_t t = 0;
  for (; t + 4 <= T; t += 4) dot_tokens<WT, 4>(row, x + t * ldx, ldx, n, out + t);
  switch (T - t) {
    case 3: dot_tokens<WT, 3>(row, x + t * ldx, ldx, n, out + t); break;
    case 2: dot_tokens<WT, 2>(row, x + t * ldx, ldx, n, out + t); break;
    case 1: dot_tokens<WT, 1>(row, x + t * ldx, ldx, n, out + t); break;
    default: break;
  }
}

}  // namespace

void float_dot_avx512(DType wtype, const void* row, const float* x, int64_t ldx, int64_t T, int64_t n, float* out) {
  switch (wtype) {
    case DType::F32: dot_all<DType::F32>(row, x, ldx, T, n, out); return;
    case DType::BF16: dot_all<DType::BF16>(row, x, ldx, T, n, out); return;
    case DType::F16: dot_all<DType::F16>(row, x, ldx, T, n, out); return;
    default: float_dot_scalar(wtype, row, x, ldx, T, n, out); return;
  }
}

}  // namespace jetmoe
