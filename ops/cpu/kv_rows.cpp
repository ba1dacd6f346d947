#include "ops/cpu/kv_rows.h"

#include <cstring>
#include <stdexcept>
#include <string>

#include "ops/cpu/float_dot.h"
#include "quant/quantize.h"

namespace jetmoe {

void kv_widen_scalar(DType t, const uint8_t* rows, int64_t n_rows, int64_t d, float* out) {
  const size_t rb = dtype_row_bytes(t, static_cast<size_t>(d));
  for (int64_t r = 0; r < n_rows; ++r) {
    const uint8_t* row = rows + static_cast<size_t>(r) * rb;
    switch (t) {
      case DType::F32:
      case DType::F16:
      case DType::BF16: float_row_to_f32(t, row, d, out + r * d); break;
      case DType::Q8_0: dequantize_row(t, row, out + r * d, d); break;
      default: throw std::invalid_argument(std::string("kv_widen: not a KV cache type: ") + dtype_name(t));
    }
  }
}

KvWidenFn kv_widen_for(CpuIsa isa) {
  switch (isa) {
    case CpuIsa::Avx512: return kv_widen_avx512;
    case CpuIsa::Avx2: return kv_widen_avx2;
    default: return kv_widen_scalar;
  }
}

void kv_store_row(DType t, const float* x, int64_t d, uint8_t* dst) {
  switch (t) {
    case DType::F32: std::memcpy(dst, x, static_cast<size_t>(d) * sizeof(float)); return;
    case DType::F16:
    case DType::BF16: {
      for (int64_t i = 0; i < d; ++i) {
        const uint16_t h = t == DType::F16 ? f32_to_f16(x[i]) : f32_to_bf16(x[i]);
        std::memcpy(dst + 2 * i, &h, 2);
      }
      return;
    }
    case DType::Q8_0: quantize_row_maxabs(t, x, dst, d); return;
    default: throw std::invalid_argument(std::string("kv_store: not a KV cache type: ") + dtype_name(t));
  }
}

}  // namespace jetmoe
