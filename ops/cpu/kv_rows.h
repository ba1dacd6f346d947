// The row types a KV cache stores (runtime/kv_cache.h: F32, F16, BF16, Q8_0) and the CPU
// kernels that read them: widening rows to float (prefill hands contiguous floats to OpenBLAS)
// and the two halves of decode attention computed straight from the stored rows. One table of
// kernels per ISA, chosen like the other per-ISA kernels (ops/cpu/cpu_isa.h).
#pragma once

#include <cstdint>

#include "ops/cpu/cpu_isa.h"
#include "runtime/dtype.h"

namespace jetmoe {

// out[r * d + i] = element i of row r, for r < n_rows; the rows are contiguous,
// dtype_row_bytes(t, d) bytes each. t is F32, F16, BF16 or Q8_0 (d a multiple of 32).
using KvWidenFn = void (*)(DType t, const uint8_t* rows, int64_t n_rows, int64_t d, float* out);

// The two halves of decode attention straight from cache rows of any cache type, each row read
// and converted once for all `nq` query heads that share the KV head (no float copy of the rows):
//   scores:     s[j * lds + r] = scale * dot(row r, q + j * ldq)            for r < n_rows, j < nq
//   accumulate: out[j * ldo + i] = alpha[j] * sum_r p[j * ldp + r] * row_r[i]  for i < d, j < nq
//               (out is overwritten: the weighted sum of the value rows, scaled by alpha)
using KvScoresFn = void (*)(DType t, const uint8_t* rows, int64_t n_rows, int64_t d, const float* q, int64_t ldq,
                            int64_t nq, float scale, float* s, int64_t lds);
using KvAccumulateFn = void (*)(DType t, const uint8_t* rows, int64_t n_rows, int64_t d, const float* p, int64_t ldp,
                                int64_t nq, const float* alpha, float* out, int64_t ldo);

// One cache row of type t from d floats (kv_store_row's contract and bytes).
using KvStoreFn = void (*)(DType t, const float* x, int64_t d, uint8_t* dst);

struct KvRowKernels {
  KvWidenFn widen;
  KvScoresFn scores;
  KvAccumulateFn accumulate;
  KvStoreFn store;
};

// The kernels of one ISA (must be in supported_isas(); tests check every path against scalar).
const KvRowKernels& kv_row_kernels(CpuIsa isa);

// The scalar kernels: the reference, and what the SIMD tables fall back to for head sizes that
// do not fit their vectors.
void kv_widen_scalar(DType t, const uint8_t* rows, int64_t n_rows, int64_t d, float* out);
void kv_scores_scalar(DType t, const uint8_t* rows, int64_t n_rows, int64_t d, const float* q, int64_t ldq, int64_t nq,
                      float scale, float* s, int64_t lds);
void kv_accumulate_scalar(DType t, const uint8_t* rows, int64_t n_rows, int64_t d, const float* p, int64_t ldp,
                          int64_t nq, const float* alpha, float* out, int64_t ldo);

// Defined in kv_rows_avx2.cpp / kv_rows_avx512.cpp (compiled with those flags).
const KvRowKernels& kv_row_kernels_avx2();
const KvRowKernels& kv_row_kernels_avx512();

// Stores d floats as one cache row of type t: F32 exactly, F16/BF16 rounded to nearest, Q8_0 with
// the max-abs scale per 32 values (the rounding llama.cpp uses for its q8_0 cache).
void kv_store_row(DType t, const float* x, int64_t d, uint8_t* dst);

}  // namespace jetmoe
