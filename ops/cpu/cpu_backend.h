// The CPU implementation of Backend: OpenMP over output rows, OpenBLAS for float prefill GEMM,
// per-ISA kernels (picked once from CPUID) for matrix-vector products and quantized weights.
#pragma once

#include <vector>

#include "runtime/backend.h"

namespace jetmoe {

class CpuBackend : public Backend {
 public:
  CpuBackend();
  std::string name() const override;

  void embed(const int32_t* tokens, int64_t T, const WeightView& table, float* x) override;
  void rms_norm(const float* x, int64_t T, int64_t n, const float* gain, float eps, float* y) override;
  void matmul(const float* x, int64_t T, const WeightView& W, float* y, int64_t ldy) override;
  void rope(float* x, int64_t T, int64_t n_heads, int64_t head_dim, int64_t ld, const int32_t* pos,
            float theta) override;
  void attention(const float* q, int64_t T, int64_t slots, const int32_t* slot, const int32_t* first,
                 const KvCache& cache, int layer, float* out) override;
  void silu_mul(const float* z, int64_t T, int64_t F, float* h) override;
  void kv_store(KvCache& cache, int layer, const float* k, const float* v, int64_t ld, int64_t T,
                const int32_t* pos) override;

 private:
  void matmul_float_rows(const float* x, int64_t T, const WeightView& W, float* y, int64_t ldy);
  void matmul_float_gemm(const float* x, int64_t T, const WeightView& W, float* y, int64_t ldy);
  void attention_prefill(const float* q, int64_t T, int64_t slots, const int32_t* slot, const int32_t* first,
                         const KvCache& cache, int layer, float* out);
  void matmul_quantized(const float* x, int64_t T, const WeightView& W, float* y, int64_t ldy);

  std::vector<float> widen_;       // float copy of a chunk of weight rows for GEMM (never whole tensors)
  std::vector<uint8_t> act_q_;     // activations quantized for int8/int4 dot products
};

}  // namespace jetmoe
