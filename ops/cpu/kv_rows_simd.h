// kv_widen written once over a vector-traits type (ops/cpu/simd_avx2.h, simd_avx512.h); included
// only by kv_rows_avx2.cpp and kv_rows_avx512.cpp, each compiled with its own flags.
#pragma once

#include <cstring>

#include "ops/cpu/kv_rows.h"
#include "quant/qtypes.h"

namespace jetmoe {
namespace {

template <class V>
void kv_widen_simd(DType t, const uint8_t* rows, int64_t n_rows, int64_t d, float* out) {
  constexpr int64_t W = V::width;
  if (d % W != 0) return kv_widen_scalar(t, rows, n_rows, d, out);  // odd head sizes: rare, small
  const int64_t n = n_rows * d;  // float-typed rows are contiguous elements
  switch (t) {
    case DType::F32: std::memcpy(out, rows, static_cast<size_t>(n) * sizeof(float)); return;
    case DType::F16: {
      const auto* h = reinterpret_cast<const uint16_t*>(rows);
      for (int64_t i = 0; i < n; i += W) V::store(out + i, V::load_f16(h + i));
      return;
    }
    case DType::BF16: {
      const auto* h = reinterpret_cast<const uint16_t*>(rows);
      for (int64_t i = 0; i < n; i += W) V::store(out + i, V::load_bf16(h + i));
      return;
    }
    case DType::Q8_0: {
      const auto* b = reinterpret_cast<const BlockQ8_0*>(rows);  // rows are whole blocks, back to back
      for (int64_t k = 0; k < n / kQK8_0; ++k, out += kQK8_0) {
        const auto s = V::set1(f16_to_f32(b[k].d));
        for (int64_t i = 0; i < kQK8_0; i += W) V::store(out + i, V::mul(s, V::load_i8(b[k].qs + i)));
      }
      return;
    }
    default: return kv_widen_scalar(t, rows, n_rows, d, out);  // throws: not a cache type
  }
}

}  // namespace
}  // namespace jetmoe
