// The AVX2 table of KV-row kernels (compiled with those flags; used only when the CPU has them).
#include "ops/cpu/kv_rows_simd.h"
#include "ops/cpu/simd_avx2.h"

namespace jetmoe {

const KvRowKernels& kv_row_kernels_avx2() {
  static const KvRowKernels k{kv_widen_simd<Avx2>, kv_scores_simd<Avx2>, kv_accumulate_simd<Avx2>,
                                 kv_store_simd<Avx2>};
  return k;
}

}  // namespace jetmoe
