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

// Widens n elements of a float-typed row to float32.
void float_row_to_f32(DType wtype, const void* row, int64_t n, float* out);

}  // namespace jetmoe
