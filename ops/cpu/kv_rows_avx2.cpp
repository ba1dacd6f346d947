// AVX2 versions of kv_widen, kv_scores and kv_accumulate (compiled with those flags; called only when the CPU has them).
#include "ops/cpu/kv_rows_simd.h"
#include "ops/cpu/simd_avx2.h"

namespace jetmoe {

void kv_widen_avx2(DType t, const uint8_t* rows, int64_t n_rows, int64_t d, float* out) {
  kv_widen_simd<Avx2>(t, rows, n_rows, d, out);
}

void kv_scores_avx2(DType t, const uint8_t* rows, int64_t n_rows, int64_t d, const float* q, int64_t ldq, int64_t nq,
                    float scale, float* s, int64_t lds) {
  kv_scores_simd<Avx2>(t, rows, n_rows, d, q, ldq, nq, scale, s, lds);
}

void kv_accumulate_avx2(DType t, const uint8_t* rows, int64_t n_rows, int64_t d, const float* p, int64_t ldp,
                        int64_t nq, const float* alpha, float* out, int64_t ldo) {
  kv_accumulate_simd<Avx2>(t, rows, n_rows, d, p, ldp, nq, alpha, out, ldo);
}

}  // namespace jetmoe
