// Conversions between float rows and the row types a KV cache stores (runtime/kv_cache.h):
// F32, F16, BF16 and Q8_0. Attention widens a chunk of cache rows at a time into a small float
// buffer that stays in L1/L2 and runs OpenBLAS on it, so a cache row is read from memory once, in
// its compact form.
#pragma once

#include <cstdint>

#include "ops/cpu/cpu_isa.h"
#include "runtime/dtype.h"

namespace jetmoe {

// out[r * d + i] = element i of row r, for r < n_rows; the rows are contiguous,
// dtype_row_bytes(t, d) bytes each. t is F32, F16, BF16 or Q8_0 (d a multiple of 32).
using KvWidenFn = void (*)(DType t, const uint8_t* rows, int64_t n_rows, int64_t d, float* out);

void kv_widen_scalar(DType t, const uint8_t* rows, int64_t n_rows, int64_t d, float* out);
void kv_widen_avx2(DType t, const uint8_t* rows, int64_t n_rows, int64_t d, float* out);
void kv_widen_avx512(DType t, const uint8_t* rows, int64_t n_rows, int64_t d, float* out);

KvWidenFn kv_widen_for(CpuIsa isa);

// The two halves of decode attention straight from cache rows of any cache type, each row read
// and converted once for all `nq` query heads that share the KV head (no float copy of the rows):
//   scores:     s[j * lds + r] = scale * dot(row r, q + j * ldq)            for r < n_rows, j < nq
//   accumulate: out[j * ldo + i] = alpha[j] * sum_r p[j * ldp + r] * row_r[i]  for i < d, j < nq
//               (out is overwritten: the weighted sum of the value rows, scaled by alpha)
using KvScoresFn = void (*)(DType t, const uint8_t* rows, int64_t n_rows, int64_t d, const float* q, int64_t ldq,
                            int64_t nq, float scale, float* s, int64_t lds);
using KvAccumulateFn = void (*)(DType t, const uint8_t* rows, int64_t n_rows, int64_t d, const float* p, int64_t ldp,
                                int64_t nq, const float* alpha, float* out, int64_t ldo);

void kv_scores_scalar(DType t, const uint8_t* rows, int64_t n_rows, int64_t d, const float* q, int64_t ldq, int64_t nq,
                      float scale, float* s, int64_t lds);
void kv_scores_avx2(DType t, const uint8_t* rows, int64_t n_rows, int64_t d, const float* q, int64_t ldq, int64_t nq,
                    float scale, float* s, int64_t lds);
void kv_scores_avx512(DType t, const uint8_t* rows, int64_t n_rows, int64_t d, const float* q, int64_t ldq, int64_t nq,
                      float scale, float* s, int64_t lds);
void kv_accumulate_scalar(DType t, const uint8_t* rows, int64_t n_rows, int64_t d, const float* p, int64_t ldp,
                          int64_t nq, const float* alpha, float* out, int64_t ldo);
void kv_accumulate_avx2(DType t, const uint8_t* rows, int64_t n_rows, int64_t d, const float* p, int64_t ldp,
                        int64_t nq, const float* alpha, float* out, int64_t ldo);
void kv_accumulate_avx512(DType t, const uint8_t* rows, int64_t n_rows, int64_t d, const float* p, int64_t ldp,
                          int64_t nq, const float* alpha, float* out, int64_t ldo);

KvScoresFn kv_scores_for(CpuIsa isa);
KvAccumulateFn kv_accumulate_for(CpuIsa isa);

// Stores d floats as one cache row of type t: F32 exactly, F16/BF16 rounded to nearest, Q8_0 with
// the max-abs scale per 32 values (the rounding llama.cpp uses for its q8_0 cache).
void kv_store_row(DType t, const float* x, int64_t d, uint8_t* dst);

}  // namespace jetmoe
