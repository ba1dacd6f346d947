// Integer dot products of quantized weight rows with quantized activations (CPU).
//
// Activations are quantized once per row (token) to the weight type's activation format:
// Q8_0 blocks (32 int8 + fp16 scale) for Q8_0/Q4_0 weights, Q8_K blocks (256 int8 + fp32 scale +
// 16 block sums) for Q4_K weights. The kernels accumulate int8 x int4/int8 products in int32 and
// apply the float scales once per block.
#pragma once

#include <cstddef>
#include <cstdint>

#include "ops/cpu/cpu_isa.h"
#include "runtime/dtype.h"

namespace jetmoe {

// Bytes of one quantized activation row of n elements for weights of type wtype.
// Throws std::invalid_argument like quantize_row for bad wtype / n.
size_t activation_row_bytes(DType wtype, int64_t n);

// Quantizes one activation row (max-abs rounding to int8) for weights of type wtype, with the
// active ISA's code; every ISA gives the same bytes (the _isa form, for tests, must be supported).
void quantize_activation_row(DType wtype, const float* x, void* dst, int64_t n);
void quantize_activation_row_isa(CpuIsa isa, DType wtype, const float* x, void* dst, int64_t n);

// Quantizes T rows (x row t at x + t*ldx) into T contiguous activation rows.
void quantize_activation_rows(DType wtype, const float* x, int64_t ldx, void* dst, int64_t T,
                              int64_t n);

// y[r] = dot(row r of W, x) for r in [row_begin, row_end); W rows are
// contiguous, row r at W + r * dtype_row_bytes(wtype, n); xq from quantize_activation_row.
// Single-threaded (callers split rows over threads); uses active_isa().
void qmatvec(DType wtype, const void* W, int64_t row_begin, int64_t row_end, int64_t n,
             const void* xq, float* y);

// Y[t*ldy + r] = dot(row r of W, activation row t) for r in [row_begin, row_end), t < T.
// Xq holds T activation rows, activation_row_bytes(wtype, n) apart. Register-tiled over
// rows x tokens so every weight block is decoded once per tile of tokens (prefill kernel).
void qmatmul(DType wtype, const void* W, int64_t row_begin, int64_t row_end, int64_t n,
             const void* Xq, int64_t T, float* Y, int64_t ldy);

// The same on one given ISA (must be in supported_isas()); tests use these to check every path.
void qmatvec_isa(CpuIsa isa, DType wtype, const void* W, int64_t row_begin, int64_t row_end,
                 int64_t n, const void* xq, float* y);
void qmatmul_isa(CpuIsa isa, DType wtype, const void* W, int64_t row_begin, int64_t row_end,
                 int64_t n, const void* Xq, int64_t T, float* Y, int64_t ldy);

}  // namespace jetmoe
