// The float-weight row kernel written once over a vector-traits type; included only by the per-ISA
// files (float_dot_avx2.cpp, float_dot_avx512.cpp), each with its own traits and compiler flags.
// Everything here has internal linkage, so no SIMD-compiled code can leak into portable code.
#pragma once

#include <cstdint>

#include "ops/cpu/float_dot.h"
#include "quant/stream_prefetch.h"

namespace jetmoe {
namespace {

// V must provide: type vec; static constexpr int64_t width; zero(); load(const float*);
// load_bf16(const uint16_t*); load_f16(const uint16_t*); fma(a, b, acc); add(a, b); hsum(v).
template <class V, DType WT>
inline typename V::vec load_w(const void* base, int64_t i) {
  if constexpr (WT == DType::F32) return V::load(static_cast<const float*>(base) + i);
  else if constexpr (WT == DType::BF16) return V::load_bf16(static_cast<const uint16_t*>(base) + i);
  else return V::load_f16(static_cast<const uint16_t*>(base) + i);
}

// The last n - i (< W) elements of a row, widened by the scalar converter and summed in order:
// the tail of dot_tokens and dot_row_group alike.
template <DType WT>
float dot_tail(const void* row, const float* x, int64_t i, int64_t n) {
  float wt[64];  // n - i < W <= 16
  float_row_to_f32(WT, static_cast<const uint8_t*>(row) + i * dtype_block_bytes(WT), n - i, wt);
  float s = 0.0f;
  for (int64_t k = i; k < n; ++k) s += wt[k - i] * x[k];
  return s;
}

// 2 to 4 tokens share each loaded weight vector: the weight row is read from memory once.
// One token goes through dot_row_group<V, WT, 1>.
template <class V, DType WT, int NT>
void dot_tokens(const void* row, const float* x, int64_t ldx, int64_t n, float* out) {
  constexpr int64_t W = V::width;
  typename V::vec acc[NT][2];
  for (int t = 0; t < NT; ++t) acc[t][0] = acc[t][1] = V::zero();
  int64_t i = 0;
  for (; i + 2 * W <= n; i += 2 * W) {
    const auto w0 = load_w<V, WT>(row, i), w1 = load_w<V, WT>(row, i + W);
    for (int t = 0; t < NT; ++t) {
      acc[t][0] = V::fma(w0, V::load(x + t * ldx + i), acc[t][0]);
      acc[t][1] = V::fma(w1, V::load(x + t * ldx + i + W), acc[t][1]);
    }
  }
  for (; i + W <= n; i += W) {
    const auto w0 = load_w<V, WT>(row, i);
    for (int t = 0; t < NT; ++t) acc[t][0] = V::fma(w0, V::load(x + t * ldx + i), acc[t][0]);
  }
  // The last fewer-than-W elements of the row go through the scalar converter (dot_tail).
  for (int t = 0; t < NT; ++t)
    out[t] = V::hsum(V::add(acc[t][0], acc[t][1])) + (i < n ? dot_tail<WT>(row, x + t * ldx, i, n) : 0.0f);
}

// NR rows of one token in one pass over x, two accumulators per row. The one kernel for one
// token: FloatDotFn's single row (NR = 1, any T not shared by 2-4 tokens) and FloatDotRowsFn's
// groups, so a row's sum is the same bits through either. A decode row (prefetch > 0, NR = 1)
// prefetches its stream prefetch bytes ahead into L2 and half that into L1, like the int8/int4
// decode kernels (quant/stream_prefetch.h: rows are contiguous, so this runs into the next rows).
template <class V, DType WT, int NR>
void dot_row_group(const uint8_t* rows, size_t rb, const float* x, int64_t n, float* out, size_t prefetch = 0) {
  constexpr int64_t W = V::width;
  constexpr size_t kStepBytes = 2 * W * (WT == DType::F32 ? 4 : 2);
  const size_t prefetch_l1 = l1_prefetch_bytes(prefetch);
  typename V::vec acc[NR][2];
  for (int r = 0; r < NR; ++r) acc[r][0] = acc[r][1] = V::zero();
  int64_t i = 0;
  for (; i + 2 * W <= n; i += 2 * W) {
    if (NR == 1 && prefetch) {
      const uint8_t* p = rows + static_cast<size_t>(i) * (kStepBytes / (2 * W));
      for (size_t l = 0; l < kStepBytes; l += 64) __builtin_prefetch(p + prefetch + l, 0, 2);
      if (prefetch_l1)
        for (size_t l = 0; l < kStepBytes; l += 64) __builtin_prefetch(p + prefetch_l1 + l, 0, 3);
    }
    const auto x0 = V::load(x + i), x1 = V::load(x + i + W);
    for (int r = 0; r < NR; ++r) {
      acc[r][0] = V::fma(load_w<V, WT>(rows + r * rb, i), x0, acc[r][0]);
      acc[r][1] = V::fma(load_w<V, WT>(rows + r * rb, i + W), x1, acc[r][1]);
    }
  }
  for (; i + W <= n; i += W) {
    const auto x0 = V::load(x + i);
    for (int r = 0; r < NR; ++r) acc[r][0] = V::fma(load_w<V, WT>(rows + r * rb, i), x0, acc[r][0]);
  }
  for (int r = 0; r < NR; ++r)
    out[r] = V::hsum(V::add(acc[r][0], acc[r][1])) + (i < n ? dot_tail<WT>(rows + r * rb, x, i, n) : 0.0f);
}

template <class V, DType WT>
void dot_rows(const void* rows, size_t rb, int64_t n_rows, const float* x, int64_t n, float* out) {
  const auto* base = static_cast<const uint8_t*>(rows);
  int64_t r = 0;
  for (; r + 4 <= n_rows; r += 4) dot_row_group<V, WT, 4>(base + static_cast<size_t>(r) * rb, rb, x, n, out + r);
  switch (n_rows - r) {
    case 3: dot_row_group<V, WT, 3>(base + static_cast<size_t>(r) * rb, rb, x, n, out + r); break;
    case 2: dot_row_group<V, WT, 2>(base + static_cast<size_t>(r) * rb, rb, x, n, out + r); break;
    case 1: dot_row_group<V, WT, 1>(base + static_cast<size_t>(r) * rb, rb, x, n, out + r); break;
    default: break;
  }
}

template <class V>
void float_dot_rows_simd(DType wtype, const void* rows, size_t rb, int64_t n_rows, const float* x, int64_t n,
                         float* out) {
  switch (wtype) {
    case DType::F32: dot_rows<V, DType::F32>(rows, rb, n_rows, x, n, out); return;
    case DType::BF16: dot_rows<V, DType::BF16>(rows, rb, n_rows, x, n, out); return;
    case DType::F16: dot_rows<V, DType::F16>(rows, rb, n_rows, x, n, out); return;
    default: float_dot_rows_scalar(wtype, rows, rb, n_rows, x, n, out); return;
  }
}

template <class V, DType WT>
void dot_all(const void* row, const float* x, int64_t ldx, int64_t T, int64_t n, float* out) {
  int64_t t = 0;
  for (; t + 4 <= T; t += 4) dot_tokens<V, WT, 4>(row, x + t * ldx, ldx, n, out + t);
  switch (T - t) {
    case 3: dot_tokens<V, WT, 3>(row, x + t * ldx, ldx, n, out + t); break;
    case 2: dot_tokens<V, WT, 2>(row, x + t * ldx, ldx, n, out + t); break;
    case 1:
      dot_row_group<V, WT, 1>(static_cast<const uint8_t*>(row), 0, x + t * ldx, n, out + t,
                              T == 1 ? decode_prefetch_bytes(WT) : 0);
      break;
    default: break;
  }
}

template <class V>
void float_dot_simd(DType wtype, const void* row, const float* x, int64_t ldx, int64_t T, int64_t n, float* out) {
  switch (wtype) {
    case DType::F32: dot_all<V, DType::F32>(row, x, ldx, T, n, out); return;
    case DType::BF16: dot_all<V, DType::BF16>(row, x, ldx, T, n, out); return;
    case DType::F16: dot_all<V, DType::F16>(row, x, ldx, T, n, out); return;
    default: float_dot_scalar(wtype, row, x, ldx, T, n, out); return;
  }
}

}  // namespace
}  // namespace jetmoe
