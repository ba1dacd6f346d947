// AVX2 version of kv_widen (compiled with those flags; called only when the CPU has them).
#include "ops/cpu/kv_rows_simd.h"
#include "ops/cpu/simd_avx2.h"

namespace jetmoe {

void kv_widen_avx2(DType t, const uint8_t* rows, int64_t n_rows, int64_t d, float* out) {
  kv_widen_simd<Avx2>(t, rows, n_rows, d, out);
}

}  // namespace jetmoe
