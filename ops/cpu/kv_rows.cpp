#include "ops/cpu/kv_rows.h"

#include <algorithm>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

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

// The scalar paths: each row widened once (exactly, by kv_widen_scalar), then plain float loops.
void kv_scores_scalar(DType t, const uint8_t* rows, int64_t n_rows, int64_t d, const float* q, int64_t ldq, int64_t nq,
                      float scale, float* s, int64_t lds) {
  const size_t rb = dtype_row_bytes(t, static_cast<size_t>(d));
  static thread_local std::vector<float> w;  // one widened row, kept between calls
  w.resize(static_cast<size_t>(d));
  for (int64_t r = 0; r < n_rows; ++r) {
    kv_widen_scalar(t, rows + static_cast<size_t>(r) * rb, 1, d, w.data());
    for (int64_t j = 0; j < nq; ++j) {
      float acc = 0.0f;
      for (int64_t i = 0; i < d; ++i) acc += w[static_cast<size_t>(i)] * q[j * ldq + i];
      s[j * lds + r] = scale * acc;
    }
  }
}

void kv_accumulate_scalar(DType t, const uint8_t* rows, int64_t n_rows, int64_t d, const float* p, int64_t ldp,
                          int64_t nq, const float* alpha, float* out, int64_t ldo) {
  const size_t rb = dtype_row_bytes(t, static_cast<size_t>(d));
  static thread_local std::vector<float> w;
  w.resize(static_cast<size_t>(d));
  for (int64_t j = 0; j < nq; ++j) std::fill(out + j * ldo, out + j * ldo + d, 0.0f);
  for (int64_t r = 0; r < n_rows; ++r) {
    kv_widen_scalar(t, rows + static_cast<size_t>(r) * rb, 1, d, w.data());
    for (int64_t j = 0; j < nq; ++j)
      for (int64_t i = 0; i < d; ++i) out[j * ldo + i] += p[j * ldp + r] * w[static_cast<size_t>(i)];
  }
  for (int64_t j = 0; j < nq; ++j)
    for (int64_t i = 0; i < d; ++i) out[j * ldo + i] *= alpha[j];
}


const KvRowKernels& kv_row_kernels(CpuIsa isa) {
  static const KvRowKernels scalar{kv_widen_scalar, kv_scores_scalar, kv_accumulate_scalar, kv_store_row};
  switch (isa) {
    case CpuIsa::Avx512: return kv_row_kernels_avx512();
    case CpuIsa::Avx2: return kv_row_kernels_avx2();
    default: return scalar;
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
