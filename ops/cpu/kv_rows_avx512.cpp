// AVX-512 version of kv_widen (compiled with those flags; called only when the CPU has them).
#include "ops/cpu/kv_rows_simd.h"
#include "ops/cpu/simd_avx512.h"

namespace jetmoe {

void kv_widen_avx512(DType t, const uint8_t* rows, int64_t n_rows, int64_t d, float* out) {
  kv_widen_simd<Avx512>(t, rows, n_rows, d, out);
}

}  // namespace jetmoe
