// Dot products of float-typed weight rows (F32, F16, BF16) with a float32 vector, per ISA.
// Quantized rows go through quant/qdot.h instead.
#pragma once

#include <cstdint>

#include "ops/cpu/cpu_isa.h"
#include "runtime/dtype.h"

namespace jetmoe {

// out[t] = dot(row, x + t * ldx) for t < T; `row` holds n elements of `wtype`.
using FloatDotFn = void (*)(DType wtype, const void* row, const float* x, int64_t ldx, int64_t T, int64_t n,
                            float* out);

void float_dot_scalar(DType wtype, const void* row, const float* x, int64_t ldx, int64_t T, int64_t n, float* out);
void float_dot_avx2(DType wtype, const void* row, const float* x, int64_t ldx, int64_t T, int64_t n, float* out);
void float_dot_avx512(DType wtype, const void* row, const float* x, int64_t ldx, int64_t T, int64_t n, float* out);

FloatDotFn float_dot_for(CpuIsa isa);

// out[r] = dot(row r, x) for r < n_rows, one token, the rows row_bytes apart (a router's E rows).
// Four rows share each pass over x, so their FMA chains overlap and four lines are in flight
// where FloatDotFn, row by row, waits on two chains of one row: Ice Lake VM, a decode step's
// 8 x 2048 f32 router from L2 took ~2.3 us row by row. FloatDotFn's one-token row is the same
// kernel with one row (float_dot_simd.h, dot_row_group), so the logits, and the experts they
// pick, are the same bits either way.
using FloatDotRowsFn = void (*)(DType wtype, const void* rows, size_t row_bytes, int64_t n_rows, const float* x,
                                int64_t n, float* out);

void float_dot_rows_scalar(DType wtype, const void* rows, size_t row_bytes, int64_t n_rows, const float* x, int64_t n,
                           float* out);
void float_dot_rows_avx2(DType wtype, const void* rows, size_t row_bytes, int64_t n_rows, const float* x, int64_t n,
                         float* out);
void float_dot_rows_avx512(DType wtype, const void* rows, size_t row_bytes, int64_t n_rows, const float* x, int64_t n,
                           float* out);

FloatDotRowsFn float_dot_rows_for(CpuIsa isa);

// Widens n elements of a float-typed row to float32.
void float_row_to_f32(DType wtype, const void* row, int64_t n, float* out);

}  // namespace jetmoe
