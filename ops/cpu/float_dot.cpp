#include "ops/cpu/float_dot.h"

#include <stdexcept>

namespace jetmoe {

void float_row_to_f32(DType wtype, const void* row, int64_t n, float* out) {
  switch (wtype) {
    case DType::F32: {
      const float* r = static_cast<const float*>(row);
      for (int64_t i = 0; i < n; ++i) out[i] = r[i];
      return;
    }
    case DType::BF16: {
      const uint16_t* r = static_cast<const uint16_t*>(row);
      for (int64_t i = 0; i < n; ++i) out[i] = bf16_to_f32(r[i]);
      return;
    }
    case DType::F16: {
      const uint16_t* r = static_cast<const uint16_t*>(row);
      for (int64_t i = 0; i < n; ++i) out[i] = f16_to_f32(r[i]);
      return;
    }
    default: throw std::invalid_argument(std::string("float_row_to_f32: not a float type: ") + dtype_name(wtype));
  }
}

void float_dot_scalar(DType wtype, const void* row, const float* x, int64_t ldx, int64_t T, int64_t n, float* out) {
  // Four partial sums, like the SIMD paths, so results differ from them only by rounding order.
  for (int64_t t = 0; t < T; ++t) {
    const float* xt = x + t * ldx;
    float s[4] = {0, 0, 0, 0};
    int64_t i = 0;
    auto w = [&](int64_t k) -> float {
      switch (wtype) {
        case DType::F32: return static_cast<const float*>(row)[k];
        case DType::BF16: return bf16_to_f32(static_cast<const uint16_t*>(row)[k]);
        default: return f16_to_f32(static_cast<const uint16_t*>(row)[k]);
      }
    };
    for (; i + 4 <= n; i += 4)
      for (int j = 0; j < 4; ++j) s[j] += w(i + j) * xt[i + j];
    for (; i < n; ++i) s[0] += w(i) * xt[i];
    out[t] = (s[0] + s[1]) + (s[2] + s[3]);
  }
}

void float_dot_rows_scalar(DType wtype, const void* rows, size_t row_bytes, int64_t n_rows, const float* x, int64_t n,
                           float* out) {
  for (int64_t r = 0; r < n_rows; ++r)
    float_dot_scalar(wtype, static_cast<const uint8_t*>(rows) + static_cast<size_t>(r) * row_bytes, x, n, 1, n, out + r);
}

FloatDotRowsFn float_dot_rows_for(CpuIsa isa) {
  switch (isa) {
    case CpuIsa::Avx512: return float_dot_rows_avx512;
    case CpuIsa::Avx2: return float_dot_rows_avx2;
    default: return float_dot_rows_scalar;
  }
}

FloatDotFn float_dot_for(CpuIsa isa) {
  switch (isa) {
    case CpuIsa::Avx512: return float_dot_avx512;
    case CpuIsa::Avx2: return float_dot_avx2;
    default: return float_dot_scalar;
  }
}

}  // namespace jetmoe
