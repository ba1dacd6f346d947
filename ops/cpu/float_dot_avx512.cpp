// AVX-512 version of float_dot (compiled with AVX-512 flags; called only when the CPU has them).
#include "ops/cpu/float_dot_simd.h"
#include "ops/cpu/simd_avx512.h"

namespace jetmoe {

void float_dot_avx512(DType wtype, const void* row, const float* x, int64_t ldx, int64_t T, int64_t n, float* out) {
  float_dot_simd<Avx512>(wtype, row, x, ldx, T, n, out);
}

void float_dot_rows_avx512(DType wtype, const void* rows, size_t row_bytes, int64_t n_rows, const float* x, int64_t n,
                           float* out) {
  float_dot_rows_simd<Avx512>(wtype, rows, row_bytes, n_rows, x, n, out);
}

}  // namespace jetmoe
