// Scalar reference quantization / dequantization of rows of floats into the GGUF block formats
// (Q8_0, Q4_0, Q4_K; layouts in quant/qtypes.h).
#pragma once

#include <cstdint>

#include "runtime/dtype.h"

namespace jetmoe {

// Quantizes n floats into dtype_row_bytes(t, n) bytes at dst, with an error-minimising search of
// the block scales (and, for Q4_K, mins). Throws std::invalid_argument if t is not a quantized
// type or n is not a multiple of its block size.
void quantize_row(DType t, const float* x, void* dst, int64_t n);

// Plain round-to-nearest with the max-abs scale (Q8_0: amax/127; Q4_0: the ggml "-8 at the
// max-abs element"; Q4_K: min/max per sub-block). Kept as the baseline the search is tested
// against; same error checks as quantize_row.
void quantize_row_maxabs(DType t, const float* x, void* dst, int64_t n);

// Decodes n elements of type t. Same error checks. The single-row functions refuse the repacked
// types Q8_0R / Q4_0R / Q4_KR, which interleave 16 rows (quant/repack.h).
void dequantize_row(DType t, const void* src, float* y, int64_t n);

// Decodes row r of a matrix of type t (rows of n elements, any type including the repacked ones).
void dequantize_matrix_row(DType t, const void* matrix, int64_t r, float* y, int64_t n);

// Quantizes `rows` rows of n floats (row-major, contiguous) into rows of dtype_row_bytes(t, n)
// bytes, parallel over rows with OpenMP. For a repacked type rows must be a multiple of 16.
void quantize_tensor_rows(DType t, const float* x, void* dst, int64_t rows, int64_t n);

// Throws std::invalid_argument unless t is quantized and n is a non-negative multiple of its block
// size. `what` names the caller in the message.
void check_quant_row(DType t, int64_t n, const char* what);

}  // namespace jetmoe
